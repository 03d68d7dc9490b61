"""The workers that move a study from stage to stage, and the node that runs them."""
