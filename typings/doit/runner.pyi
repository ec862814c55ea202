class Runner:
    always_execute: bool

class MRunner(Runner):
    num_process: int
