"""`python -m feature_lens_core`: the command line (see `feature_lens_core.cli`)."""

from feature_lens_core.cli import main

raise SystemExit(main())
