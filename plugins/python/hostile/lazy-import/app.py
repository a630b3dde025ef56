"""hostile-lazy-import-py: imports a module inside `handle`, which a component cannot do.

`uuid.uuid5` imports `hashlib` when it is first called; a component has no files at run time,
so only modules imported while it was built exist, and the call raises ModuleNotFoundError.
The exception escapes `handle`: the batch's error must name it, with the frames it came
through, not only the trap and componentize-py's panic.
"""

import uuid

from wit_world import WitWorld as World
from wit_world.imports.types import PluginInfo, StartFrom, Subscription


class WitWorld(World):
    def describe(self) -> PluginInfo:
        everything = Subscription(
            name="all",
            aggregate_types=[],
            event_types=[],
            batch_size=100,
            start_from=StartFrom.BEGINNING,
        )
        return PluginInfo(name="hostile-lazy-import-py", version="1.0.0", subscriptions=[everything])

    def handle(self, subscription, batch) -> None:
        for event in batch:
            print(uuid.uuid5(uuid.NAMESPACE_URL, event.id))
