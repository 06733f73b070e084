"""The example model shared by the example DAGs: the seed guide's insurance-propensity model."""

MODEL_ID = "insurance-propensity"
MODEL_NAME = "Insurance propensity"
QUERY = "SELECT * FROM model_predictions"
ID_COLUMN = "prediction_id"
TIMESTAMP_COLUMN = "prediction_timestamp"
ACTUALS = {"will_buy_insurance": "did_buy_insurance"}
ACTUALS_TIMESTAMP_COLUMN = "actual_timestamp"

RAW_INPUTS = {"raw_text": "text"}
FEATURES = {
    "amount": "numeric",
    "owner": "string",
    "is_new": "boolean",
    "embeddings": {"type": "tensor", "dimensions": [768]},
}
PREDICTIONS = {"will_buy_insurance": "boolean", "proba": "numeric"}
