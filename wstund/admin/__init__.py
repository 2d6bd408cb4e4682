"""Operations: the admin socket's app, Hub gauges for /metrics, config reload, wstunctl."""
