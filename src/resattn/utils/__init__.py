"""Small helpers shared by the layers above: training precision (:mod:`.precision`) and the
machine description every report carries (:mod:`.machine`)."""
