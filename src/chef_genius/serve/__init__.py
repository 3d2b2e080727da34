"""`chef-genius serve`: an OpenAI-compatible HTTP server, a recipe endpoint and a web page.

- `engine`: batched generation behind ``submit(request) -> async iterator of pieces``;
- `decoding`: one decoding step for rows of mixed settings, and streaming detokenization;
- `prompts`: prompts built as training and `generate` build them, and a request's decoding;
- `schemas`: request bodies read strictly, errors in OpenAI's shape;
- `checks`: the verdicts a recipe comes with;
- `app`: the HTTP endpoints; `page`: the page's files; `server`: start it all (the CLI's handler).
"""
