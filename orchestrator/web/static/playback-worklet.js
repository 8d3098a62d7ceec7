// The agent's reply: s16le chunks at the TTS rate, played gap-free at the context's rate
// (linear interpolation). Messages in: start {rate, reply}, pcm {data}, end, stop (barge-in:
// drop everything now). Messages out: started {reply, frame}, progress {played, underruns},
// drained {reply, played}, stopped {reply, played}.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunks = [];
    this.cursor = 0; // index into chunks[0]
    this.buffered = 0; // source samples queued
    this.live = false; // a reply is being played
    this.primed = false;
    this.ended = false;
    this.starving = false;
    this.underruns = 0;
    this.played = 0;
    this.reply = 0;
    this.step = 1;
    this.a = 0;
    this.b = 0;
    this.frac = 0;
    this.lastReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(m) {
    if (m.type === "start") {
      this.clear();
      this.reply = m.reply;
      this.step = m.rate / sampleRate;
      this.live = true;
      this.played = 0;
    } else if (m.type === "pcm") {
      const ints = new Int16Array(m.data);
      const floats = new Float32Array(ints.length);
      for (let i = 0; i < ints.length; i++) floats[i] = ints[i] / 32768;
      this.chunks.push(floats);
      this.buffered += floats.length;
    } else if (m.type === "end") {
      this.ended = true;
    } else if (m.type === "stop") {
      const was = this.live;
      this.clear();
      if (was) this.port.postMessage({ type: "stopped", reply: this.reply, played: this.played });
    }
  }

  clear() {
    this.chunks = [];
    this.cursor = 0;
    this.buffered = 0;
    this.live = false;
    this.primed = false;
    this.ended = false;
    this.starving = false;
    this.frac = 0;
  }

  pull() {
    while (this.cursor >= this.chunks[0].length) {
      this.chunks.shift();
      this.cursor = 0;
    }
    this.buffered -= 1;
    return this.chunks[0][this.cursor++];
  }

  finish() {
    this.played += 1;
    this.live = false;
    this.port.postMessage({ type: "drained", reply: this.reply, played: this.played, underruns: this.underruns });
  }

  sample(i) {
    if (!this.live) return 0;
    if (!this.primed) {
      if (this.buffered < 2) {
        if (this.ended) this.finish();
        return 0;
      }
      this.a = this.pull();
      this.b = this.pull();
      this.frac = 0;
      this.primed = true;
      this.port.postMessage({ type: "started", reply: this.reply, frame: currentFrame + i });
    }
    while (this.frac >= 1) {
      if (this.buffered === 0) {
        if (this.ended) {
          this.finish();
          return 0;
        }
        if (!this.starving) this.underruns += 1; // the reply's audio came later than real time
        this.starving = true;
        return 0;
      }
      this.starving = false;
      this.a = this.b;
      this.b = this.pull();
      this.frac -= 1;
      this.played += 1;
    }
    const y = this.a + (this.b - this.a) * this.frac;
    this.frac += this.step;
    return y;
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const first = output[0];
    for (let i = 0; i < first.length; i++) first[i] = this.sample(i);
    for (let c = 1; c < output.length; c++) output[c].set(first);
    if (this.live && currentTime - this.lastReport >= 0.1) {
      this.lastReport = currentTime;
      this.port.postMessage({ type: "progress", reply: this.reply, played: this.played, underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("playback", PlaybackProcessor);
