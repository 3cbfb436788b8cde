// Validate an AsyncAPI document with the reference parser; print a JSON report.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2], "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
// severity 0 = error, 1 = warning
const errors = diagnostics.filter((d) => d.severity === 0)
  .map((d) => `${d.path.join(".")}: ${d.message}`);
const warnings = diagnostics.filter((d) => d.severity === 1)
  .map((d) => `${d.path.join(".")}: ${d.message}`);
console.log(JSON.stringify({
  errors,
  warnings,
  channels: document ? document.channels().length : 0,
}));
process.exit(errors.length ? 1 : 0);
