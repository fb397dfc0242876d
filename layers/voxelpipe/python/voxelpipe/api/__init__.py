"""The query API: a FastAPI app, served by Mangum behind API Gateway or by uvicorn locally."""
