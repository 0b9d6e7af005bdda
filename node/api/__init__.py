"""The node's two HTTP faces: the peer-to-peer API and the local admin API."""
