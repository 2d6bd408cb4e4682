/* What the built-in service pages share: the host page's room (create form, invite link, member
   list with kick, join and leave bookkeeping) and the user page's join (saved name, password
   prompt, connection line, end of the room). Each page keeps only its own messages.
   Served at /static/rooms.js after /libwstun.js. */
var WSTunRooms = (function () {
  'use strict';

  function $(id) { return document.getElementById(id); }

  /* "1.5 MB" for 1572864. */
  function formatSize(n) {
    var units = ['B', 'KB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }

  /* A display name from a peer, bounded: peers are not trusted. */
  function cleanName(name, fallback) { return String(name || fallback || '?').slice(0, 60); }

  /* Who sent a room message, as the server stamped it (top-level "from"): a member's user id,
     or null for the room's host. What the payload claims is never used for this. */
  function sender(msg) { return typeof msg.from === 'string' ? msg.from : null; }

  /* A chat label that cannot be forged: the chosen name plus the stamped id. */
  function label(name, from) {
    if (from === null) return 'Host';
    var shown = cleanName(name, from);
    return shown === from ? from : shown + ' (' + from + ')';
  }

  function showError(text) {
    $('status').className = 'error';
    $('status').textContent = text;
  }

  function joinLink(service, uuid, roomToken, serverToken) {
    var url = location.origin + '/' + service + '/main?instance=' + encodeURIComponent(uuid);
    if (roomToken) url += '&room_token=' + encodeURIComponent(roomToken);
    if (serverToken) url += '&token=' + encodeURIComponent(serverToken);
    return url;
  }

  /* The host page. opts: service, defaultName, log(text) for join/leave notices,
     onMessage(msg) for the service's own messages, onMemberLeft(userId, name) (optional,
     runs before user_leave is broadcast). Returns {host, members: Map userId -> name}. */
  function hostRoom(opts) {
    var serverToken = new URLSearchParams(location.search).get('token') || '';
    var room = { host: null, members: new Map() };

    function renderMembers() {
      var ul = $('members');
      ul.textContent = '';
      room.members.forEach(function (name, userId) {
        var li = document.createElement('li');
        li.dataset.user = userId;
        var span = document.createElement('span');
        span.className = 'member-name';
        span.textContent = name || userId;
        var kick = document.createElement('button');
        kick.className = 'danger kick';
        kick.type = 'button';
        kick.textContent = 'Kick';
        kick.onclick = function () {
          room.host.kickUser(userId).catch(function (e) { $('conn').textContent = 'Kick failed: ' + e.message; });
        };
        li.appendChild(span);
        li.appendChild(kick);
        ul.appendChild(li);
      });
      $('count').textContent = String(room.members.size);
    }

    function onMessage(msg) {
      var p = msg.payload || {};
      switch (msg.type) {
        case 'client_connected':
          room.members.set(p.userId, room.members.get(p.userId) || '');
          renderMembers();
          return;
        case 'client_disconnected': {
          if (!room.members.has(p.userId)) return;
          var name = room.members.get(p.userId) || p.userId;
          room.members.delete(p.userId);
          if (opts.onMemberLeft) opts.onMemberLeft(p.userId, name);
          room.host.broadcast('user_leave', { userId: p.userId, name: name });
          renderMembers();
          opts.log(label(name, p.userId) + ' left');
          return;
        }
        case 'user_join': {
          var who = sender(msg);
          if (who === null || !room.members.has(who)) return;
          room.members.set(who, cleanName(p.name, who));
          renderMembers();
          opts.log(label(p.name, who) + ' joined');
          return;
        }
        case 'instance_destroyed':
          $('conn').textContent = 'The room was closed (' + p.reason + ').';
          return;
      }
      opts.onMessage(msg);
    }

    $('create-form').onsubmit = function (event) {
      event.preventDefault();
      var name = $('room-name').value.trim() || opts.defaultName;
      var roomToken = $('room-token').value;
      $('create').disabled = true;
      $('status').textContent = 'Creating…';
      room.host = WSTun.createInstanceHost({
        service: opts.service, name: name, serverToken: serverToken, instanceToken: roomToken,
        onInstanceCreated: function (p) {
          $('setup').style.display = 'none';
          $('room').classList.add('on');
          $('room-title').textContent = p.name + ' (' + p.uuid + ')';
          $('link').value = joinLink(opts.service, p.uuid, roomToken, serverToken);
          $('conn').textContent = 'Room is open.';
          document.body.dataset.uuid = p.uuid;
        },
        onInstanceReclaimed: function () { $('conn').textContent = 'Reconnected: the room is yours again.'; },
        onDisconnected: function () { $('conn').textContent = 'Connection lost, reconnecting…'; },
        onMessage: onMessage,
        onError: function (e) {
          showError('Error: ' + e.message);
          $('conn').textContent = 'Error: ' + e.message;
          $('create').disabled = false;
        },
        onClose: function () { $('conn').textContent = 'Disconnected.'; }
      });
      window.wstunHost = room.host;
      room.host.connect();
    };
    $('copy').onclick = function () {
      $('link').select();
      if (navigator.clipboard) navigator.clipboard.writeText($('link').value).catch(function () {});
      else document.execCommand('copy');
      $('copy').textContent = 'Copied';
    };
    return room;
  }

  /* The user page. opts: service, log(text) for notices, onJoined() and onRejoined() (after
     user_join is sent), onMessage(msg) for the service's own messages, onEnded(text) once when
     the room ends for this page. Returns {instance, serverToken, client, name}: client and
     name are set by the join. */
  function joinRoom(opts) {
    var params = new URLSearchParams(location.search);
    var instance = params.get('instance');
    var serverToken = params.get('token') || '';
    // Links made by our host page carry room_token; reference-style links use token.
    var roomToken = params.get('room_token') || params.get('token') || '';
    var nameKey = 'wstun.' + opts.service + '.name';
    var room = { instance: instance, serverToken: serverToken, client: null, name: '', ended: false };

    try { $('name').value = localStorage.getItem(nameKey) || ''; } catch (e) {}
    if (!instance) {
      showError('This link names no room. Ask the host for the room link.');
      $('join').disabled = true;
    }

    function connected() { $('state').textContent = 'Connected as ' + room.name; }
    function end(text) {
      if (room.ended) return;
      room.ended = true;
      $('state').textContent = text;
      opts.onEnded(text);
    }
    function onMessage(msg) {
      switch (msg.type) {
        case 'owner_disconnected': $('state').textContent = 'Host connection lost, waiting…'; return;
        case 'owner_reconnected': connected(); return;
        case 'instance_destroyed': end('The room was closed.'); return;
      }
      opts.onMessage(msg);
    }

    $('join-form').onsubmit = function (event) {
      event.preventDefault();
      room.name = $('name').value.trim();
      if (!room.name || !instance) return;
      try { localStorage.setItem(nameKey, room.name); } catch (e) {}
      if ($('room-token').value) roomToken = $('room-token').value;
      $('join').disabled = true;
      $('status').className = '';
      $('status').textContent = 'Joining…';
      var client = room.client = WSTun.createInstanceClient({
        service: opts.service, instanceUuid: instance, serverToken: serverToken, instanceToken: roomToken,
        onJoined: function (p) {
          $('join-form').style.display = 'none';
          $('room').classList.add('on');
          if (p.instanceName) $('room-name').textContent = p.instanceName;
          connected();
          client.send('user_join', { userId: client.userId, name: room.name });
          client.send('request_state', { from: client.userId });
          if (opts.onJoined) opts.onJoined();
        },
        onRejoined: function () {
          connected();
          client.send('user_join', { userId: client.userId, name: room.name });
          if (opts.onRejoined) opts.onRejoined();
        },
        onDisconnected: function () { $('state').textContent = 'Connection lost, reconnecting…'; },
        onMessage: onMessage,
        onKicked: function () { end('You were removed from the room by the host.'); },
        onError: function (e) {
          if (client.joinedOnce) { opts.log('Error: ' + e.message); return; }
          showError('Could not join: ' + e.message);
          if (e.code === 'invalid_token') $('token-row').style.display = 'block';
          $('join').disabled = false;
        },
        onClose: function () { if (client.joinedOnce) end('Disconnected from the room.'); }
      });
      window.wstunClient = client;
      client.connect();
    };
    // Leave cleanly when the page goes away (a page kept in the back/forward cache stays open).
    window.addEventListener('pagehide', function () { if (room.client) room.client.disconnect(); });
    return room;
  }

  return { $: $, formatSize: formatSize, cleanName: cleanName, sender: sender, label: label,
           hostRoom: hostRoom, joinRoom: joinRoom };
})();
