"""The pure core: keys, codec, store, ring, sentinel. Never imports Ray."""
