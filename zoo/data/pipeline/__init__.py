"""The web-scale data pipeline: datatrove stages from raw corpora to sharded token files.

``zoo data prepare -c configs/data/<name>.yaml`` runs it (``zoo.data.prepare``); ``run`` assembles
the stages, ``stages`` holds the zoo's own datatrove steps, ``report`` writes the data report.
``zoo.data.shards`` reads the result back for training. datatrove is imported only in here.
"""
