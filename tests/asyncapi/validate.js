// Parses one AsyncAPI document (YAML or JSON file) with the official parser and prints one
// JSON line: {"errors": [...], "warnings": [...], "document": <the file's content as JSON>}.
// Exit code 0 whatever the diagnostics (the Rust test decides); 1 if the file cannot be read.
const fs = require('node:fs');
const yaml = require('js-yaml');
const { Parser } = require('@asyncapi/parser');

async function main() {
  const text = fs.readFileSync(process.argv[2], 'utf8');
  const parser = new Parser();
  const { diagnostics } = await parser.parse(text);
  const describe = (d) => ({ code: d.code, message: d.message, path: d.path.join('/') });
  const errors = diagnostics.filter((d) => d.severity === 0).map(describe);
  const warnings = diagnostics.filter((d) => d.severity === 1).map(describe);
  const document = yaml.load(text, { schema: yaml.CORE_SCHEMA });
  process.stdout.write(JSON.stringify({ errors, warnings, document }) + '\n');
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack || error) + '\n');
  process.exit(1);
});
