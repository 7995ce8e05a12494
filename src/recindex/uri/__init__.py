"""URI: one decoder that is both the indexer and the retriever (seed 002), and the two-stage
generative baselines (DSI/TIGER-style decoders on fixed semantic-ID indexes) it is measured against."""
