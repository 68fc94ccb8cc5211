"""Projects and project runs: the records (``models``), the project store (``projects``),
and the executor that runs a priced plan node by node on RQ workers (``executor``)."""
