// One streaming Responses call with the official openai Node SDK, unchanged; prints what it saw as JSON.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_KEY, maxRetries: 0 });
const stream = await client.responses.create({ model: process.env.MODEL, input: "stream from node", stream: true });
const types = [];
let text = "";
let final = null;
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") text += event.delta;
  if (event.type === "response.completed") final = event.response;
}
console.log(JSON.stringify({ types, text, final }));
