"""Several wstund nodes as one, through Redis: registry, pub/sub links, node-to-node HTTP."""
