"""Every bus topic is built here, so ZeroMQ prefix matching does the routing.

ZeroMQ matches prefixes: a subscriber to `exec.TEAM_001` also receives `exec.TEAM_0010`.
Consumers that need one exact topic compare the received topic with the one built here.
"""

MD = b"md."
BOOK = b"md.book."
TRADE = b"md.trade."
STATUS = b"md.status"
UNDERLYING = b"md.underlying."
EXEC = b"exec."
RESP = b"resp."
NEWS = b"news"
SIGNAL = b"signal."
HEARTBEAT = b"sys.heartbeat."
FAIR = b"md.fair."
PUBLIC_SIGNAL = b"signal.public."
SENTIMENT = b"signal.public.sentiment"
INDICATORS = b"signal.public.indicators."
SIM_STATE = b"sys.sim_state"  # simulator -> events, on sim_private only: it holds the regime
NEWS_SHOCK = b"sys.news_shock"  # events -> simulator, on events_private only
KEYS = b"sys.keys"  # matcher -> gateways, on matcher_private only: a team's key was replaced


def book(instrument_id: str) -> bytes:
    return BOOK + instrument_id.encode()


def trade(instrument_id: str) -> bytes:
    return TRADE + instrument_id.encode()


def underlying(symbol: str) -> bytes:
    return UNDERLYING + symbol.encode()


def execs(team_id: str) -> bytes:
    return EXEC + team_id.encode()


def response(gateway_id: str) -> bytes:
    return RESP + gateway_id.encode()


def signal(role: str) -> bytes:
    return SIGNAL + role.encode()


def heartbeat(service: str) -> bytes:
    return HEARTBEAT + service.encode()


def fair(underlying: str) -> bytes:
    return FAIR + underlying.encode()


def indicators(symbol: str) -> bytes:
    return INDICATORS + symbol.encode()
