"""The benchmark's peers: KServe's model server, Seldon MLServer and Ray Serve serving the same model.

launch.py says how each is installed, started and set up (and why); model.py is the model they all serve,
through the project's own code; kserve_server.py, mlserver_runtime.py and rayserve_app.py are the three
servers, run from their own environments under .venv-peers/; compare.py holds the v2 runs, the ratios
and their report for loadtests/bench.py.
"""
