__version__ = "0.0.1"

import warnings as _warnings
# fastai calls `torch.jit.script` when it is imported, and torch 2.14 deprecates it: a warning on every command (`--help` included) that no user can act on
_warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
