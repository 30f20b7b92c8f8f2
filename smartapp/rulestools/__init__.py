"""Rules tools: the `handoff rules` command line, the backtest and the rules setting."""
