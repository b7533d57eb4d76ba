"""Self-supervised methods: one short module each (heads, loss, optimizer defaults).

`catalog.py` lists them (torch-free); `registry.get_method` imports the one that runs.
"""
