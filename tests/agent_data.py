"""Agent trajectories written for the tests, in transformers' apply_chat_template conventions: tool definitions,
an assistant that calls several tools (two at once), a call that fails and its retry, tool results, a final
answer, a follow-up question; with and without reasoning. Call ids are 9 characters (Mistral's templates
require it)."""

import copy

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Tomorrow's weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "source": {"type": "string", "description": "ISO code, e.g. EUR"},
            "target": {"type": "string", "description": "ISO code, e.g. USD"}},
            "required": ["amount", "source", "target"]}}},
]


def call(id_, name, **arguments):
    return {"type": "function", "id": id_, "function": {"name": name, "arguments": arguments}}


# several tools, two calls at once, a failed call and its retry, a final answer; then a follow-up
TRAJECTORY = [
    {"role": "system", "content": "You are a travel assistant. Use the tools; answer in one line."},
    {"role": "user", "content": "Weather in Paris and Rome tomorrow? And what is 100 EUR in USD?"},
    {"role": "assistant", "content": "", "tool_calls": [call("paris0001", "get_weather", city="Paris"),
                                                        call("rome00002", "get_weather", city="Rome")]},
    {"role": "tool", "tool_call_id": "paris0001", "name": "get_weather", "content": '{"temp_c": 18, "sky": "cloudy"}'},
    {"role": "tool", "tool_call_id": "rome00002", "name": "get_weather", "content": '{"temp_c": 24, "sky": "sunny"}'},
    {"role": "assistant", "content": "", "tool_calls": [call("conv00003", "convert_currency", amount=100,
                                                             source="EURO", target="USD")]},
    {"role": "tool", "tool_call_id": "conv00003", "name": "convert_currency",
     "content": "Error: unknown currency code \"EURO\".\nUse ISO codes."},
    {"role": "assistant", "content": "", "tool_calls": [call("conv00004", "convert_currency", amount=100,
                                                             source="EUR", target="USD")]},
    {"role": "tool", "tool_call_id": "conv00004", "name": "convert_currency", "content": '{"result": 108.5}'},
    {"role": "assistant", "content": "In short: Paris 18°C and cloudy, Rome 24°C and sunny; 100 EUR is 108.50 USD."},
    {"role": "user", "content": "Should I take an umbrella to Paris?"},
    {"role": "assistant", "content": "In short: yes, a small one; it will be cloudy."},
]

REASONING = {
    2: "The user wants two cities' weather and a conversion. I can ask for both cities at once.",
    5: "Now the conversion: 100 from euros to dollars.",
    7: "The code must be ISO: EUR, not EURO. Retry.",
    9: "\nI have everything: Paris 18 cloudy, Rome 24 sunny, 108.5 USD.\n",
    11: "Cloudy in Paris: an umbrella is sensible.",
}


def trajectory(reasoning: bool = False, field: str = "reasoning_content", single_calls: bool = False) -> list[dict]:
    """The trajectory; with reasoning on every assistant turn (under `field`); with single_calls, one call per
    turn (Llama 3.1's template allows no more): the two weather calls follow one another."""
    messages = copy.deepcopy(TRAJECTORY)
    if single_calls:
        first, second = messages[2]["tool_calls"]
        messages[2:5] = [{"role": "assistant", "content": "", "tool_calls": [first]}, messages[3],
                         {"role": "assistant", "content": "", "tool_calls": [second]}, messages[4]]
    if reasoning:
        assistants = [m for m in messages if m["role"] == "assistant"]
        texts = list(REASONING.values())
        texts = texts[:1] * (len(assistants) - len(texts)) + texts
        for m, text in zip(assistants, texts):
            m[field] = text
    return messages
