"""An example xaibench plugin: `catalog` declares the names (torch-free), the other modules implement them."""
