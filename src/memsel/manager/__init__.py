"""A memory manager that learns what to keep (issue 17).

When memory holds K slots and a statement arrives, a policy decides which slot to evict, or to drop the
newcomer. ``streams`` (pure numpy): a story as a stream of statements with its questions, the baseline
policies (FIFO, LIFO, random, LRU by a selector's attention, Belady's oracle) and the retention metric.
``network`` (pure torch): the manager network (a :class:`memsel.network.Selector` over the K slots and
the newcomer), its file and its batched greedy rollout. ``env`` (gymnasium): an episode = one story.
``budget``: the registered budget strategy ``managed``. ``train``: Lightning pretraining on the oracle's
decisions, PPO with distillation in RLlib, and the evaluation table.
"""
