"""Each kind's phase transitions, owned in one place (pure: typed status models in, status patches out).

One module per kind — ``recommendation`` (TuningRecommendation), ``indexchange`` (IndexChange), ``target``
(PostgresTarget's ``lastAnalysis``) — decides which transitions are legal and builds the status patch that records
one, so that every check a transition needs lives beside it. Flows and handlers call these and write the patch they
return; nothing else builds a ``phase`` or a ``lastAnalysis`` by hand.
"""
