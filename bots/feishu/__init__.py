"""Feishu (and Lark): webhook and long-connection intake, the worker's client, the bot registry."""
