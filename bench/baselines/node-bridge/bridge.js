// Baseline for `callbridge bench`: a Twilio Media Streams <-> OpenAI Realtime bridge written
// the way most teams write one in Node.js (the `ws` package, JSON.parse / JSON.stringify of
// every message, one upstream socket per call). Deliberately no optimisation tricks.
//
//   PORT=8081 OPENAI_API_KEY=... OPENAI_REALTIME_URL=ws://127.0.0.1:9000/v1/realtime node bridge.js
//   → the provider connects to ws://127.0.0.1:8081/media
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 8081);
const REALTIME_URL = process.env.OPENAI_REALTIME_URL || 'wss://api.openai.com/v1/realtime';
const API_KEY = process.env.OPENAI_API_KEY;
if (!API_KEY) {
  console.error('OPENAI_API_KEY is not set');
  process.exit(2);
}

const SESSION_UPDATE = {
  type: 'session.update',
  session: {
    type: 'realtime',
    model: 'gpt-realtime',
    output_modalities: ['audio'],
    instructions: 'You are a helpful phone assistant. Keep answers short.',
    audio: {
      input: { format: { type: 'audio/pcmu' }, turn_detection: { type: 'server_vad' } },
      output: { format: { type: 'audio/pcmu' }, voice: 'alloy' },
    },
  },
};

const wss = new WebSocketServer({ host: HOST, port: PORT });

wss.on('connection', (twilio) => {
  let streamSid = null;
  const pending = []; // appends sent before the upstream socket opened
  const openai = new WebSocket(`${REALTIME_URL}?model=gpt-realtime`, {
    headers: { Authorization: `Bearer ${API_KEY}` },
  });

  const closeBoth = () => {
    if (twilio.readyState === WebSocket.OPEN) twilio.close();
    if (openai.readyState === WebSocket.OPEN || openai.readyState === WebSocket.CONNECTING) openai.close();
  };

  openai.on('open', () => {
    openai.send(JSON.stringify(SESSION_UPDATE));
    for (const message of pending) openai.send(message);
    pending.length = 0;
  });

  openai.on('message', (data) => {
    let event;
    try { event = JSON.parse(data); } catch { return; }
    if (event.type === 'response.output_audio.delta' || event.type === 'response.audio.delta') {
      if (streamSid && twilio.readyState === WebSocket.OPEN) {
        twilio.send(JSON.stringify({ event: 'media', streamSid, media: { payload: event.delta } }));
      }
    } else if (event.type === 'error') {
      console.error('OpenAI error:', event.error);
    }
  });

  openai.on('error', (err) => console.error('OpenAI socket error:', err.message));
  openai.on('close', closeBoth);

  twilio.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    switch (msg.event) {
      case 'start':
        streamSid = msg.start?.streamSid;
        break;
      case 'media': {
        const append = JSON.stringify({ type: 'input_audio_buffer.append', audio: msg.media?.payload });
        if (openai.readyState === WebSocket.OPEN) openai.send(append);
        else pending.push(append);
        break;
      }
      case 'stop':
        closeBoth();
        break;
    }
  });

  twilio.on('error', (err) => console.error('Twilio socket error:', err.message));
  twilio.on('close', closeBoth);
});

wss.on('listening', () => console.log(`node bridge listening on ws://${HOST}:${PORT}/media`));
