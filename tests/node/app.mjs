// A Node app that sends the same logs and spans on every run through the official OpenTelemetry
// JavaScript OTLP exporters: fixed timestamps and ids, so what two receivers store from two runs
// can be compared line by line (tests/e2e/test_node_exporters.py).
//
//   SLUICE_EXPORTER=http-json|http-proto|grpc  SLUICE_ENDPOINT=http://127.0.0.1:4318  node app.mjs
//
// http-json uses @opentelemetry/exporter-{trace,logs}-otlp-http (OTLP/HTTP JSON),
// http-proto the -proto ones (OTLP/HTTP protobuf), grpc the -grpc ones (OTLP/gRPC, the reference).
// Exits non-zero when any export failed.

import { SpanKind, context, trace } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

const kind = process.env.SLUICE_EXPORTER;
const endpoint = process.env.SLUICE_ENDPOINT;
if (!kind || !endpoint) {
  console.error('set SLUICE_EXPORTER (http-json | http-proto | grpc) and SLUICE_ENDPOINT');
  process.exit(2);
}

async function exporters() {
  if (kind === 'http-json') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    const { OTLPLogExporter } = await import('@opentelemetry/exporter-logs-otlp-http');
    return [new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }),
      new OTLPLogExporter({ url: `${endpoint}/v1/logs` })];
  }
  if (kind === 'http-proto') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
    const { OTLPLogExporter } = await import('@opentelemetry/exporter-logs-otlp-proto');
    return [new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }),
      new OTLPLogExporter({ url: `${endpoint}/v1/logs` })];
  }
  if (kind === 'grpc') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
    const { OTLPLogExporter } = await import('@opentelemetry/exporter-logs-otlp-grpc');
    return [new OTLPTraceExporter({ url: endpoint }), new OTLPLogExporter({ url: endpoint })];
  }
  throw new Error(`unknown SLUICE_EXPORTER ${kind}`);
}

const failures = [];

// Every export's result is checked: the SDK's processors would only log a failure.
function checked(exporter) {
  const exportOriginal = exporter.export.bind(exporter);
  exporter.export = (items, done) => exportOriginal(items, (result) => {
    if (result.code !== 0) failures.push(`${exporter.constructor.name}: ${result.error ?? result.code}`);
    done(result);
  });
  return exporter;
}

let nextId = 0;
const idGenerator = {
  generateTraceId: () => `5bf92f3577b34da6a3ce929d${(++nextId).toString(16).padStart(8, '0')}`,
  generateSpanId: () => `10f067aa0b${(++nextId).toString(16).padStart(6, '0')}`,
};

const T0 = 1764000000; // seconds; HrTime [s, ns] keeps nanosecond timestamps exact
const at = (ns) => [T0, ns];

const [spanExporter, logExporter] = await exporters();
const resource = resourceFromAttributes({
  'service.name': 'storefront', 'service.instance.id': 'storefront-1', 'deployment.environment': 'prod',
});
const tracerProvider = new BasicTracerProvider({
  resource, idGenerator, spanProcessors: [new SimpleSpanProcessor(checked(spanExporter))],
});
const loggerProvider = new LoggerProvider({
  resource, processors: [new SimpleLogRecordProcessor({ exporter: checked(logExporter) })],
});
const tracer = tracerProvider.getTracer('storefront.web', '3.1.0');
const logger = loggerProvider.getLogger('storefront.web', '3.1.0');

const request = tracer.startSpan('GET /cart', {
  kind: SpanKind.SERVER, startTime: at(0),
  attributes: { 'http.request.method': 'GET', 'url.path': '/cart',
    'http.request.header.authorization': 'Bearer n0de-s3cr3t-t0k3n-value' },
});
const ctx = trace.setSpan(context.active(), request);
const child = tracer.startSpan('load cart', { startTime: at(1000), attributes: { 'cart.items': 3, 'cache.hit': false } },
  ctx);
child.addEvent('cache miss', { key: 'cart:42' }, at(2000));
child.end(at(5000));

function emit(offset, severityNumber, severityText, body, attributes) {
  logger.emit({ timestamp: at(offset), observedTimestamp: at(offset), context: ctx,
    severityNumber, severityText, body, attributes });
}
emit(10, SeverityNumber.INFO, 'INFO', 'cart viewed', { 'cart.id': 'c-42', 'cart.total': 19.99, tags: ['new', 'eu'] });
emit(11, SeverityNumber.INFO, 'INFO', 'GET /cart 200', { 'http.request.method': 'GET', 'http.route': '/cart' });
emit(12, SeverityNumber.WARN, 'WARN', 'login failed for dave@example.com with password=swordfish',
  { 'log.category': 'security', 'source.ip': '198.51.100.23' });
emit(13, SeverityNumber.ERROR, 'ERROR', 'card 5500 0000 0000 0004 was declined',
  { 'exception.type': 'CardDeclined' });
emit(14, SeverityNumber.INFO, 'INFO', { event: 'signup', contact: { email: 'erin@example.org', plan: 'pro' } }, {});
// The logs are delivered before the request span ends, as a server's access log would be: the
// receiver then knows the span has its access record and derives none from it (whatever order
// the exporters' concurrent requests would otherwise arrive in). The exporter's forceFlush waits
// for its requests in flight; SimpleLogRecordProcessor's would not.
await logExporter.forceFlush();
request.end(at(10000));

await tracerProvider.shutdown();
await loggerProvider.shutdown();
if (failures.length) {
  console.error(`exports failed: ${failures.join('; ')}`);
  process.exit(1);
}
