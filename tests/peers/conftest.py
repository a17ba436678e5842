# circuit_tracer_graph.py is a script for circuit-tracer's own virtual environment, not importable here.
collect_ignore = ["circuit_tracer_graph.py"]
