"""The render service (`helios-doit serve`): a durable queue of jobs, each run through the same doit
graph as `helios-doit job run`, an HTTP API shaped like Helios' JobManager, and its dashboard."""
