"""What a job is: the JobSpec models, loading a job from a file or URL, and the checks across its fields."""
