"""The emulator's well-known names, importable without loading its server (aiohttp.web).

``config`` takes its defaults from these, ``process`` its endpoints; the server itself
is imported only when the command (or ``run --local``) actually starts one.
"""

#: The throwaway credentials ``ibimport run --local`` signs with: a well-known test pair.
LOCAL_ACCESS_KEY_ID = "AKIAIBIMPORTLOCAL000"
LOCAL_SECRET_ACCESS_KEY = "ibimport-local-throwaway-secret"
#: Where ``ibimport emulator`` reads --secret-access-key from, so it never shows in ``ps``.
SECRET_ENV = "IBIMPORT_EMULATOR_SECRET_ACCESS_KEY"
#: The emulator's own endpoints, beside the API: counters, and forgetting everything.
STATS_PATH = "/_emulator/stats"
RESET_PATH = "/_emulator/reset"
