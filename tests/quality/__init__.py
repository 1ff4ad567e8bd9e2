"""The quality set of issue 10: generated pictures of what people post (cases.py), scored by character
error rate (cer.py) for ocrhub and for raw RapidOCR (readers.py); `bench/quality.py` prints the table."""
