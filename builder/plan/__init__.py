"""Planning: stages of a Dockerfile as a DAG of work (see stages.py)."""
