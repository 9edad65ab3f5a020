"""The experiment workflow: data sets (:mod:`.data`), one training run (:mod:`.train`), where runs
execute (:mod:`.executors`), the content-addressed run cache (:mod:`.cache`), grids of variants
and seeds (:mod:`.compare`), paired statistics and the decision rule (:mod:`.stats`), stability
metrics (:mod:`.stability`), reports (:mod:`.report`), pre-registered studies (:mod:`.study`) and
the evidence page (:mod:`.evidence`). Imported where used: none of it is needed to build a model."""
