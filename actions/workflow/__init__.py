"""Project workflows: the node catalogue (``types``, ``nodes``) and the graph a project
is (``graph``: normalise the seed's fields, validate, plan and price a run). Pure code:
the records and the executor that runs a plan on workers live in ``jobs.workflows``."""
