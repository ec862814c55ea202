"""Where commands run: the worker seam (`base`), its adapters by name (`registry`), and the processes behind them."""
