"""WebSocket close codes used by wstund (DESIGN 3.5), shared by the relay and the tunnel."""

NORMAL = 1000
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
BAD_GATEWAY = 1014  # a tunnelled WebSocket whose agent went away
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
KICKED = 4003
ROOM_CLOSED = 4004
SLOW_CONSUMER = 4008
ALREADY_CONNECTED = 4009
RATE_LIMITED = 4029
