"""What is durably true about a job: the state folder, records, locks, events, and the only code that removes outputs."""
