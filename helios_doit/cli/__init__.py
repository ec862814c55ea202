"""The `helios-doit` command line: one `cmd_*` module per subcommand."""
