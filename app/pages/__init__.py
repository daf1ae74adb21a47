"""One module per workflow step: Data, Plan, Train, Evaluate, Predict."""
