"""Resource namespaces of the clients: ``client.federations``, ``client.rounds``, ...

Each resource comes as a sync/async pair with identical methods.
"""

from .admin_tokens import AdminTokens, AsyncAdminTokens
from .deployment import AsyncDeployments, Deployments
from .evaluations import AsyncEvaluations, Evaluations
from .federations import AsyncFederations, Federations
from .models import AsyncModels, Models
from .participants import AsyncParticipants, Participants
from .rounds import AsyncRounds, Rounds
from .secagg import AsyncSecAgg, SecAgg
from .updates import AsyncUpdates, Updates

__all__ = [
    "AdminTokens",
    "AsyncAdminTokens",
    "AsyncDeployments",
    "AsyncEvaluations",
    "AsyncFederations",
    "AsyncModels",
    "AsyncParticipants",
    "AsyncRounds",
    "AsyncSecAgg",
    "AsyncUpdates",
    "Deployments",
    "Evaluations",
    "Federations",
    "Models",
    "Participants",
    "Rounds",
    "SecAgg",
    "Updates",
]
