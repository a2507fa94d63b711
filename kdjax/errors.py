"""Errors that stand for a user mistake (the command line prints them as one line),
and the preemption a run stops at."""


class KDError(Exception):
  """A mistake the user can fix (bad config, missing data, unusable workdir).

  The launchers catch this class, print `error: <message>` on one line to
  stderr and exit with status 2, without a traceback.
  """


class ConfigError(KDError):
  """A config field holds a value kdjax cannot run with."""


class DataError(KDError):
  """A dataset is absent, corrupt, or cannot be imported."""


class WorkdirError(KDError):
  """A workdir is unusable, or holds a run that must not be overwritten."""


class NonFiniteLossError(KDError):
  """The training loss became NaN or Inf."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""
