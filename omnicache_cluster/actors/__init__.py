"""Ray actors of the cache cluster: plain classes here, ``ray.remote`` in `remote`."""
