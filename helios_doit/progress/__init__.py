"""What a person sees while a run goes: the progress model, the live display, and the doit reporter."""
