"""The MoosicBox-compatible tunnel endpoint: a MoosicBox server and its apps use wstund as they
would use MoosicBox's own tunnel server."""
