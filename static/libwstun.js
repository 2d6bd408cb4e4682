/* libwstun.js: the WSTun client library served by wstund at /libwstun.js.
 *
 * Same names as the reference library, so pages written for WSTun run unchanged:
 *   WSTun.version, WSTun.generateId(), WSTun.generateUserId(), WSTun.buildWsUrl(serverToken),
 *   WSTun.listInstances(service, serverToken) -> Promise<instances> (resolves [] when the
 *     server closes without a list or says nothing for 3 s; rejects on an error or a failed
 *     connection),
 *   WSTun.createInstanceHost({...}) / WSTun.createService({...})
 *     -> {connect, disconnect, send, broadcast, kickUser},
 *   WSTun.createInstanceClient({...}) / WSTun.createClient({...}) -> {connect, disconnect, send}.
 * A refusal (an error reply to create, reclaim or join) reaches onError and ends the attempt
 * without onClose, as with the reference, so a page's close handler does not hide the error.
 * New (wstund): automatic reconnect with capped backoff and jitter (the host reclaims its
 * room with reclaim_instance and the ownerKey it was given, a member joins again),
 * host.ownerKey, host.sendTo(userId, type, payload),
 * sendBinary(bytes), request(type, payload) -> Promise correlated by the envelope id, and
 * the binary relay frame codec (WSTun.frames) used to answer HTTP-through-relay requests.
 * In a sandboxed page (an installed service the operator did not trust: an opaque origin),
 * reading sessionStorage or localStorage throws; the library then puts an in-memory Storage
 * in their place, so pages written for WSTun run (they forget across reloads).
 * Plain JavaScript, no build step.
 */
(function (global) {
    'use strict';

    function memoryStorage() {
        var items = Object.create(null);
        return {
            getItem: function (k) { return k in items ? items[k] : null; },
            setItem: function (k, v) { items[k] = String(v); },
            removeItem: function (k) { delete items[k]; },
            clear: function () { items = Object.create(null); },
            key: function (i) { return Object.keys(items)[i] || null; },
            get length() { return Object.keys(items).length; }
        };
    }

    ['sessionStorage', 'localStorage'].forEach(function (name) {
        try {
            void global[name];
        } catch (e) {  // SecurityError: an opaque origin has no Web Storage
            try {
                Object.defineProperty(global, name, { value: memoryStorage(), configurable: true });
            } catch (ignored) { /* left as it is: the page sees the browser's own error */ }
        }
    });

    var VERSION = '2.0.0';
    // Close codes after which reconnecting cannot help.
    var FINAL_CLOSE_CODES = { 1008: 'policy', 4003: 'kicked', 4004: 'room closed', 4029: 'rate limited' };
    // Join refusals that clear up by themselves while the owner reclaims its room.
    var RETRY_JOIN_CODES = { owner_away: true, user_id_taken: true };
    var REQUEST_TIMEOUT_MS = 15000;
    var LIST_TIMEOUT_MS = 3000;  // the reference's: a list that does not come is an empty one
    var MAX_QUEUED_WHILE_AWAY = 1000;

    function generateId() {
        var bytes = new Uint8Array(8);
        (global.crypto || global.msCrypto).getRandomValues(bytes);
        return Array.prototype.map.call(bytes, function (b) {
            return ('0' + b.toString(16)).slice(-2);
        }).join('');
    }

    function buildWsUrl(serverToken) {
        var loc = global.location;
        var scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
        var url = scheme + '//' + loc.host + '/ws';
        if (serverToken) url += '?token=' + encodeURIComponent(serverToken);
        return url;
    }

    function WSTunError(message, code, payload) {
        var err = new Error(message || code || 'error');
        err.code = code || null;
        err.payload = payload || null;
        return err;
    }

    function errorFromReply(msg) {
        var p = msg.payload || {};
        return WSTunError(p.message || p.error || msg.type, p.code || p.error, p);
    }

    function isFailure(msg) {
        return msg.type === 'error' || (msg.payload && msg.payload.success === false);
    }

    /* Binary relay frames: [kind][id length][id ASCII][payload]. */
    var frames = {
        CHUNK: 0x01,
        END: 0x02,
        ABORT: 0x03,
        encode: function (kind, requestId, payload) {
            var id = new TextEncoder().encode(String(requestId));
            if (id.length < 1 || id.length > 255) throw new Error('request id must be 1..255 bytes');
            var body = payload ? new Uint8Array(payload.buffer || payload, payload.byteOffset || 0,
                payload.byteLength) : new Uint8Array(0);
            var out = new Uint8Array(2 + id.length + body.length);
            out[0] = kind;
            out[1] = id.length;
            out.set(id, 2);
            out.set(body, 2 + id.length);
            return out;
        }
    };

    /* One reconnecting WebSocket plus request/reply correlation; host and client build on it. */
    function Connection(opts, role) {
        this.opts = opts || {};
        this.role = role;
        this.service = this.opts.service;
        this.ws = null;
        this.pending = {};
        this.queue = [];
        this.ready = false;          // in the room (created, reclaimed or joined)
        this.stopped = true;         // disconnect() called or a final close happened
        this.attempt = 0;
        this.retryTimer = null;
        this.reconnect = this.opts.reconnect !== false;
        this.minDelay = this.opts.reconnectMinDelay || 250;
        this.maxDelay = this.opts.reconnectMaxDelay || 8000;
    }

    Connection.prototype._call = function (name) {
        var fn = this.opts[name];
        if (typeof fn !== 'function') return;
        try {
            return fn.apply(null, Array.prototype.slice.call(arguments, 1));
        } catch (e) {
            if (global.console) console.error('WSTun ' + name + ' callback failed', e);
        }
    };

    Connection.prototype.connect = function () {
        this.stopped = false;
        this.refused = false;
        this.final = false;
        this.attempt = 0;
        this._open();
        return this;
    };

    Connection.prototype._open = function () {
        var self = this;
        clearTimeout(this.retryTimer);
        var ws;
        try {
            ws = new WebSocket(buildWsUrl(this.opts.serverToken));
        } catch (e) {
            this._call('onError', WSTunError('Connection failed: ' + e.message, 'connect_failed'));
            this._scheduleReconnect();
            return;
        }
        ws.binaryType = 'arraybuffer';
        this.ws = ws;
        ws.onopen = function () {
            if (self.ws !== ws) return;
            self._call('onOpen');
            self._enter();
        };
        ws.onmessage = function (event) {
            if (self.ws !== ws) return;
            if (typeof event.data !== 'string') {
                self._call('onBinary', event.data);
                return;
            }
            var msg;
            try {
                msg = JSON.parse(event.data);
            } catch (e) {
                return;
            }
            self._receive(msg);
        };
        ws.onerror = function () {
            if (self.ws !== ws) return;
            // The close event follows; it decides between reconnecting and giving up.
        };
        ws.onclose = function (event) {
            if (self.ws !== ws) return;
            self.ws = null;
            self.ready = false;
            self._failPending(WSTunError('connection closed', 'closed'));
            if (self.stopped || !self.reconnect || FINAL_CLOSE_CODES[event.code] || self.final) {
                self.stopped = true;
                if (!self.refused) self._call('onClose', event);
                return;
            }
            self._call('onDisconnected', event);
            self._scheduleReconnect();
        };
    };

    Connection.prototype._scheduleReconnect = function () {
        var self = this;
        if (this.stopped) return;
        // Capped exponential backoff with jitter: a crowd of pages does not come back at once.
        var ceiling = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
        var delay = ceiling / 2 + Math.random() * ceiling / 2;
        this.attempt += 1;
        this._call('onReconnecting', { attempt: this.attempt, delay: delay });
        this.retryTimer = setTimeout(function () { self._open(); }, delay);
    };

    Connection.prototype._stop = function (error) {
        this.final = true;
        this.stopped = true;
        if (error) this._call('onError', error);
        if (this.ws) this.ws.close(1000);
        else this._call('onClose', { code: 1000, reason: error ? error.message : '' });
    };

    /* The server refused to create, reclaim or join: onError only, as the reference library
       does (its socket stays quiet), so a page's onClose cannot replace the error shown. */
    Connection.prototype._refused = function (error) {
        this.refused = true;
        this.final = true;
        this.stopped = true;
        this._call('onError', error);
        if (this.ws) this.ws.close(1000);
    };

    Connection.prototype._failPending = function (error) {
        var pending = this.pending;
        this.pending = {};
        Object.keys(pending).forEach(function (id) {
            clearTimeout(pending[id].timer);
            pending[id].reject(error);
        });
    };

    Connection.prototype._receive = function (msg) {
        var waiter = msg.id !== undefined && msg.id !== null ? this.pending[msg.id] : null;
        if (waiter) {
            delete this.pending[msg.id];
            clearTimeout(waiter.timer);
            if (isFailure(msg)) waiter.reject(errorFromReply(msg));
            else waiter.resolve(msg.payload || {}, msg);
            if (waiter.internal) return;
        }
        this._dispatch(msg);
    };

    Connection.prototype._raw = function (envelope) {
        if (!this.ws || this.ws.readyState !== 1) return false;
        this.ws.send(JSON.stringify(envelope));
        return true;
    };

    Connection.prototype._request = function (type, payload, internal, timeoutMs) {
        var self = this;
        var id = generateId();
        return new Promise(function (resolve, reject) {
            var envelope = { type: type, id: id, payload: payload || {} };
            if (self.service) envelope.service = self.service;
            var timer = setTimeout(function () {
                delete self.pending[id];
                reject(WSTunError(type + ': no reply', 'timeout'));
            }, timeoutMs || REQUEST_TIMEOUT_MS);
            self.pending[id] = { resolve: resolve, reject: reject, timer: timer, internal: internal };
            if (!self._raw(envelope)) {
                clearTimeout(timer);
                delete self.pending[id];
                reject(WSTunError('not connected', 'not_connected'));
            }
        });
    };

    /* Promise helper: send a message with an id and resolve with the reply's payload. */
    Connection.prototype.request = function (type, payload, timeoutMs) {
        return this._request(type, payload, false, timeoutMs);
    };

    Connection.prototype.send = function (type, payload) {
        var envelope = { type: type, payload: payload === undefined ? {} : payload };
        if (this.service) envelope.service = this.service;
        if (this.ready && this._raw(envelope)) return true;
        // Away (reconnecting): keep it for when the room is ours again, within reason.
        if (!this.stopped && this.queue.length < MAX_QUEUED_WHILE_AWAY) {
            this.queue.push(envelope);
            return true;
        }
        return false;
    };

    /* Binary frames (ArrayBuffer, typed array or Blob) go to the room unchanged. */
    Connection.prototype.sendBinary = function (data) {
        if (!this.ws || this.ws.readyState !== 1) return false;
        this.ws.send(data);
        return true;
    };

    Connection.prototype._flush = function () {
        var queued = this.queue;
        this.queue = [];
        for (var i = 0; i < queued.length; i++) this._raw(queued[i]);
    };

    Connection.prototype.disconnect = function () {
        this.stopped = true;
        clearTimeout(this.retryTimer);
        this.queue = [];
        if (this.ws) this.ws.close(1000);
    };

    Object.defineProperty(Connection.prototype, 'bufferedAmount', {
        get: function () { return this.ws ? this.ws.bufferedAmount : 0; }
    });
    Object.defineProperty(Connection.prototype, 'connected', {
        get: function () { return this.ready; }
    });

    /* ---- host (the room's owner) ---- */
    function InstanceHost(opts) {
        Connection.call(this, opts, 'host');
        this.uuid = this.opts.reclaimUuid || null;
        this.instanceUuid = this.uuid;
        this.instanceName = this.opts.name || 'Room';
        this.reclaiming = !!this.uuid;
        // The proof of ownership from instance_created (or given back by the page).
        this.ownerKey = this.opts.ownerKey || null;
        // As the reference: without its own callback a reclaim is reported as a creation.
        if (typeof this.opts.onInstanceReclaimed !== 'function') {
            this.opts.onInstanceReclaimed = this.opts.onInstanceCreated;
        }
    }
    InstanceHost.prototype = Object.create(Connection.prototype);

    InstanceHost.prototype._enter = function () {
        var self = this;
        var o = this.opts;
        if (this.uuid) {
            var wanted = this.uuid;
            this._request('reclaim_instance', {
                uuid: wanted, token: o.instanceToken || undefined, server_token: o.serverToken || undefined,
                ownerKey: this.ownerKey || undefined
            }, true).then(function (payload) {
                if (payload.ownerKey) self.ownerKey = payload.ownerKey;
                self.ready = true;
                self.attempt = 0;
                self._flush();
                self._call('onInstanceReclaimed', payload);
            }, function (err) {
                if (err.code === 'closed' || err.code === 'timeout') return;
                if (self.reclaiming && !self.everReady) {
                    // reclaimUuid given but the room is gone: start a new one.
                    self.uuid = self.instanceUuid = null;
                    self.ownerKey = null;
                    self.reclaiming = false;
                    self._enter();
                    return;
                }
                if (err.code === 'owner_connected') {
                    // Our old socket is not gone yet on the server side: try again shortly.
                    if (self.ws) self.ws.close(4000);
                    return;
                }
                self._refused(err);
            });
            return;
        }
        this._request('create_instance', {
            name: o.name || 'Room', token: o.instanceToken || undefined,
            server_token: o.serverToken || undefined
        }, true).then(function (payload) {
            self.uuid = self.instanceUuid = payload.uuid;
            self.ownerKey = payload.ownerKey || null;
            self.ready = self.everReady = true;
            self.attempt = 0;
            self._flush();
            self._call('onInstanceCreated', payload);
        }, function (err) {
            if (err.code === 'closed' || err.code === 'timeout') return;
            self._refused(err);
        });
    };

    InstanceHost.prototype._dispatch = function (msg) {
        if (msg.type === 'instance_reclaimed') this.everReady = true;
        if (msg.type === 'error') {
            this._call('onError', errorFromReply(msg));
            return;
        }
        if (msg.type === 'instance_destroyed') this.final = true;
        this._call('onMessage', msg);
    };

    InstanceHost.prototype.broadcast = function (type, payload) {
        return this.send(type, payload);
    };

    InstanceHost.prototype.sendTo = function (userId, type, payload) {
        var body = {};
        var src = payload || {};
        for (var k in src) if (Object.prototype.hasOwnProperty.call(src, k)) body[k] = src[k];
        body.to = userId;
        return this.send(type, body);
    };

    InstanceHost.prototype.kickUser = function (userId) {
        // Resolves with the server's client_disconnected, rejects with its error.
        return this.request('kick_client', { userId: userId, instanceUuid: this.uuid });
    };

    /* ---- client (a member of a room) ---- */
    function InstanceClient(opts) {
        Connection.call(this, opts, 'client');
        this.userId = this.opts.userId || generateId();
        this.instanceUuid = this.opts.instanceUuid;
        this.instanceName = null;
        this.joinedOnce = false;
    }
    InstanceClient.prototype = Object.create(Connection.prototype);

    InstanceClient.prototype._enter = function () {
        var self = this;
        this._request('join_instance', {
            uuid: this.instanceUuid, userId: this.userId, token: this.opts.instanceToken || undefined
        }, true).then(function (payload) {
            self.ready = true;
            self.attempt = 0;
            if (payload.userId) self.userId = payload.userId;
            self.instanceName = payload.instanceName || null;
            self._flush();
            var again = self.joinedOnce;
            self.joinedOnce = true;
            if (again && typeof self.opts.onRejoined === 'function') self._call('onRejoined', payload);
            else self._call('onJoined', payload);
        }, function (err) {
            if (err.code === 'closed' || err.code === 'timeout') return;
            if (self.joinedOnce && RETRY_JOIN_CODES[err.code]) {
                if (self.ws) self.ws.close(4000);  // reconnects with backoff
                return;
            }
            self._refused(err);
        });
    };

    InstanceClient.prototype._dispatch = function (msg) {
        if (msg.type === 'kick') {
            this.final = true;
            this._call('onKicked', msg.payload || {});
            return;
        }
        if (msg.type === 'error') {
            this._call('onError', errorFromReply(msg));
            return;
        }
        if (msg.type === 'instance_destroyed') this.final = true;
        this._call('onMessage', msg);
    };

    /* ---- one-shot helpers ---- */
    function listInstances(service, serverToken) {
        return new Promise(function (resolve, reject) {
            var done = false;
            var ws;
            function finish(settle, value) {
                if (done) return;
                done = true;
                clearTimeout(timer);
                if (ws && ws.readyState < 2) ws.close(1000);
                settle(value);
            }
            var timer = setTimeout(function () { finish(resolve, []); }, LIST_TIMEOUT_MS);
            try {
                ws = new WebSocket(buildWsUrl(serverToken));
            } catch (e) {
                finish(reject, e);
                return;
            }
            var id = generateId();
            ws.onopen = function () {
                var envelope = { type: 'list_instances', id: id, payload: {} };
                if (service) envelope.service = service;
                ws.send(JSON.stringify(envelope));
            };
            ws.onmessage = function (event) {
                var msg;
                try { msg = JSON.parse(event.data); } catch (e) { finish(reject, e); return; }
                if (msg.type === 'instance_list') {
                    finish(resolve, (msg.payload && msg.payload.instances) || []);
                } else if (msg.type === 'error') {
                    finish(reject, errorFromReply(msg));
                }
            };
            ws.onerror = function () {
                finish(reject, WSTunError('WebSocket connection failed', 'connect_failed'));
            };
            ws.onclose = function () { finish(resolve, []); };
        });
    }

    /* The reference's pre-instance client (client_register): wstund has no such registry, so
       the server refuses it with an error, which reaches onError. */
    function LegacyClient(opts) {
        Connection.call(this, opts, 'client');
        this.userId = this.opts.userId || generateId();
    }
    LegacyClient.prototype = Object.create(Connection.prototype);
    LegacyClient.prototype._enter = function () {
        var self = this;
        this._request('client_register', {
            clientType: this.service, userId: this.userId, auth_token: this.opts.serviceToken || undefined
        }, true).then(function (payload) {
            self.ready = true;
            self._call('onRegistered', payload);
        }, function (err) {
            if (err.code === 'closed' || err.code === 'timeout') return;
            self._refused(err);
        });
    };
    // Kicks, errors and messages reach it as they reach a room member.
    LegacyClient.prototype._dispatch = InstanceClient.prototype._dispatch;

    function createHost(opts) { return new InstanceHost(opts); }
    function createClient(opts) {
        return opts && opts.instanceUuid ? new InstanceClient(opts) : new LegacyClient(opts);
    }

    global.WSTun = {
        version: VERSION,
        generateId: generateId,
        generateUserId: generateId,
        buildWsUrl: buildWsUrl,
        listInstances: listInstances,
        createInstanceHost: createHost,
        createInstanceClient: function (opts) { return new InstanceClient(opts); },
        createService: createHost,
        createClient: createClient,
        frames: frames
    };
})(typeof window !== 'undefined' ? window : this);
