class MRunner:
    num_process: int
