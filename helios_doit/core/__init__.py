"""What every layer shares: the one error tree and the command line's manners."""
