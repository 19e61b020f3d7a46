// Runs the graphql-http server audit against the URL given and prints every
// result as JSON lines: {id, name, status, reason}. The Go test decides.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
for (const r of results) {
  console.log(JSON.stringify({ id: r.id, name: r.name, status: r.status, reason: r.reason ?? '' }));
}
