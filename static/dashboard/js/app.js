/* mjgate dashboard behaviour. Everything works without it except the live updates, the mask
   drawing and the dialogs; htmx (vendored) does the requests. */
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  // Like $all, but the root itself counts too (htmx hands us the swapped element).
  function within(root, selector) {
    var found = $all(selector, root);
    if (root && root.matches && root.matches(selector)) found.unshift(root);
    return found;
  }

  // --- Navigation drawer (phones) ------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-nav-toggle]");
    if (toggle) {
      var open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) { var first = $("#sidebar a, #sidebar select"); if (first) first.focus(); }
      return;
    }
    if (document.body.classList.contains("nav-open") && !event.target.closest("#sidebar")) {
      closeNav();
    }
  });
  function closeNav() {
    document.body.classList.remove("nav-open");
    $all("[data-nav-toggle]").forEach(function (b) { b.setAttribute("aria-expanded", "false"); });
  }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && document.body.classList.contains("nav-open")) closeNav();
  });

  // --- Organization switcher: switch as soon as another one is picked ------------------------
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.requestSubmit();
  });

  // --- Copy buttons ---------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent.trim();
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected for manual copy */ }
    }
  });

  // --- Confirmations ---------------------------------------------------------------------------
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  // --- Create form: show the fields the chosen action needs -----------------------------------
  function syncCreateForm(form) {
    var checked = $("input[name=action]:checked", form);
    var action = checked ? checked.value : "IMAGINE";
    $all("[data-for-actions]", form).forEach(function (el) {
      var wanted = el.getAttribute("data-for-actions").split(" ");
      var show = wanted.indexOf(action) !== -1;
      el.hidden = !show;
      $all("input, textarea, select", el).forEach(function (input) { input.disabled = !show; });
    });
    syncPrices(form, action);
    var hint = $("[data-images-hint]", form);
    if (hint) {
      var hints = {
        IMAGINE: "Optional: up to 5 reference images.",
        DESCRIBE: "One image to describe.",
        BLEND: "2 to 5 images to blend.",
        VIDEO: "The start frame: one image to animate into four ~5 s clips.",
        EDIT: "The image to edit.",
        RETEXTURE: "The image to retexture.",
      };
      hint.textContent = hints[action] || "";
    }
  }
  // The mode tiles show what the chosen action costs in each mode; test runs are free.
  var priceTable = null;
  function syncPrices(form, action) {
    if (priceTable === null) {
      var source = document.getElementById("create-prices");
      try { priceTable = source ? JSON.parse(source.textContent) : {}; } catch (e) { priceTable = {}; }
    }
    var test = $("input[name=test_mode]", form);
    var free = test && test.checked;
    // An HD (720p) video is priced on its own row.
    var resolution = $("select[name=resolution]", form);
    var key = action === "VIDEO" && resolution && resolution.value === "720p" ? "VIDEO_HD" : action;
    var row = priceTable[key] || {};
    $all("[data-price-for]", form).forEach(function (small) {
      var price = row[small.getAttribute("data-price-for")];
      if (free) small.textContent = "free";
      else if (price === null || price === undefined) small.textContent = "not offered";
      else small.textContent = Number(price).toLocaleString("en-US") + " tokens";
    });
  }
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-create-form]");
    if (form && ["action", "test_mode", "resolution"].indexOf(event.target.name) !== -1) syncCreateForm(form);
  });
  // A task started: the chosen files and the last refusal go, the prompt stays for the next one.
  // (Here and not in an hx-on attribute: the Content-Security-Policy allows no inline script.)
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-create-form]") || !event.detail.successful) return;
    $all("input[type=file]", form).forEach(function (input) { input.value = ""; });
    var feedback = $("#create-feedback", form);
    if (feedback) feedback.innerHTML = "";
  });

  // --- A new card far from where the user pressed: bring it into view and say so ------------
  function toast(html) {
    var host = $("#toasts");
    if (!host) return;
    var box = document.createElement("div");
    box.className = "alert info";
    box.setAttribute("role", "status");
    box.innerHTML = html;
    host.appendChild(box);
    setTimeout(function () { box.remove(); }, 6000);
  }
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || target.id !== "task-feed") return;
    var card = $("article.task-card", target);
    if (!card) return;
    var rect = card.getBoundingClientRect();
    var visible = rect.top >= 0 && rect.top < window.innerHeight - 40;
    if (!visible) {
      card.scrollIntoView({ block: "start" });
      var title = $("h3", card);
      var link = $("a.id", card);
      var name = title ? title.textContent.trim() : "Task";
      var href = link ? link.getAttribute("href") : "#" + card.id;
      toast("Started " + name.replace(/[<>&]/g, "") + ": <a href=\"" + href + "\">#" + card.getAttribute("data-task-id") + "</a>");
    }
  });

  // --- Dialogs (the second step of vary region, custom zoom, numbered prompts) ----------------
  function openDialogs(root) {
    within(root, "dialog.modal").forEach(function (dialog) {
      if (!dialog.open) {
        dialog.showModal();
        var focus = $("[autofocus]", dialog) || $("textarea, input, button", dialog);
        if (focus) focus.focus();
      }
      dialog.addEventListener("close", function () {
        cancelWaitingTask(dialog);
        var host = dialog.closest("#modal-root");
        if (host) host.innerHTML = "";
      }, { once: true });
    });
  }
  // Closing the second step without submitting it (Cancel, ✕, Escape) cancels the task that
  // waits for it, so no "Waiting for input" task is left behind.
  function cancelWaitingTask(dialog) {
    if (dialog.dataset.done) return;
    dialog.dataset.done = "1";
    var form = $("form[data-cancel-url]", dialog);
    if (!form) return;
    var token = $("input[name=csrfmiddlewaretoken]", form);
    // Which organization the dialog was for: the server refuses it for any other.
    var organization = $("input[name=page_organization]", form);
    var body = new FormData();
    if (token) body.append("csrfmiddlewaretoken", token.value);
    if (organization) body.append("page_organization", organization.value);
    fetch(form.getAttribute("data-cancel-url"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "HX-Request": "true", "X-CSRFToken": token ? token.value : "" }
    }).then(function () {
      var card = document.getElementById("task-" + form.getAttribute("data-task-id"));
      if (card) card.remove();
    }, function () {});
  }
  // A refused value re-renders the step in place: the old dialog is replaced, not abandoned.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "modal-root") {
      $all("dialog", target).forEach(function (d) { d.dataset.done = "1"; });
    }
  });
  document.body.addEventListener("dashboard:close-modal", function () {
    $all("#modal-root dialog").forEach(function (d) { d.dataset.done = "1"; if (d.open) d.close(); });
    var host = $("#modal-root");
    if (host) host.innerHTML = "";
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-close-dialog]")) {
      var dialog = event.target.closest("dialog");
      if (dialog) dialog.close();
    }
  });

  // --- Mask editor: paint the area to change in white; exported white-on-black PNG ------------
  function initMaskEditor(editor) {
    if (editor.dataset.ready) return;
    editor.dataset.ready = "1";
    var img = $("img", editor);
    var canvas = $("canvas", editor);
    var form = editor.closest("form");
    var output = $("input[name=mask]", form);
    var submit = $("[data-mask-submit]", form);
    var brush = $("[data-mask-brush]", form);
    var drawn = false;
    var drawing = false;
    var last = null;

    function size() {
      var w = img.naturalWidth || 512, h = img.naturalHeight || 512;
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    }
    if (img.complete) size(); else img.addEventListener("load", size);

    function point(event) {
      var rect = canvas.getBoundingClientRect();
      return {
        x: (event.clientX - rect.left) * (canvas.width / rect.width),
        y: (event.clientY - rect.top) * (canvas.height / rect.height)
      };
    }
    function radius() {
      var fraction = brush ? Number(brush.value) / 100 : 0.06;
      return Math.max(2, canvas.width * fraction);
    }
    function stroke(from, to) {
      var ctx = canvas.getContext("2d");
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.lineWidth = radius() * 2;
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(to.x, to.y, radius(), 0, Math.PI * 2);
      ctx.fill();
      markDrawn();
    }
    function markDrawn() {
      drawn = true;
      if (submit) submit.disabled = false;
      editor.setAttribute("data-drawn", "true");
    }
    canvas.addEventListener("pointerdown", function (event) {
      size();
      drawing = true;
      canvas.setPointerCapture(event.pointerId);
      last = point(event);
      stroke(last, last);
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drawing) return;
      var p = point(event);
      stroke(last, p);
      last = p;
    });
    function stop() { drawing = false; last = null; }
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);

    $all("[data-mask-clear]", form).forEach(function (button) {
      button.addEventListener("click", function () {
        canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
        drawn = false;
        editor.removeAttribute("data-drawn");
        if (submit) submit.disabled = true;
      });
    });
    // Keyboard users (and anyone in a hurry) can pick a whole region without drawing.
    $all("[data-mask-region]", form).forEach(function (button) {
      button.addEventListener("click", function () {
        size();
        var ctx = canvas.getContext("2d");
        var w = canvas.width, h = canvas.height;
        var region = button.getAttribute("data-mask-region");
        ctx.fillStyle = "#fff";
        if (region === "centre") ctx.fillRect(w / 4, h / 4, w / 2, h / 2);
        else if (region === "top") ctx.fillRect(0, 0, w, h / 2);
        else if (region === "bottom") ctx.fillRect(0, h / 2, w, h / 2);
        else ctx.fillRect(0, 0, w, h);
        markDrawn();
      });
    });

    // --- The canvas (the editor only): enlarge it, move the picture inside; the uncovered
    // area is transparent in the image sent and white in the mask, so it is filled.
    var tools = $("[data-canvas-tools]", form);
    var layout = null;  // {w, h, x, y, bw, bh} once the canvas is larger than the picture
    var composed = "";
    if (tools) {
      var original = img.getAttribute("src");
      var picture = new Image();
      var aspect = $("[data-canvas-aspect]", tools);
      var widthInput = $("[data-canvas-width]", tools);
      var heightInput = $("[data-canvas-height]", tools);
      var across = $("[data-canvas-x]", tools);
      var down = $("[data-canvas-y]", tools);
      var shown = $("[data-canvas-size]", tools);
      var imageInput = $("input[name=image]", form);
      var MAX = 4096;
      var compose = function () {
        var bw = picture.naturalWidth, bh = picture.naturalHeight;
        if (!bw || !bh) return;
        var w = bw, h = bh, choice = aspect.value;
        widthInput.disabled = heightInput.disabled = choice !== "free";
        if (choice === "free") {
          w = Math.max(bw, Math.min(MAX, Math.round(Number(widthInput.value) || bw)));
          h = Math.max(bh, Math.min(MAX, Math.round(Number(heightInput.value) || bh)));
        } else if (choice !== "original") {
          var parts = choice.split(":"), ratio = Number(parts[0]) / Number(parts[1]);
          // The smallest canvas of that shape that holds the whole picture.
          if (bw / bh < ratio) { w = Math.round(bh * ratio); } else { h = Math.round(bw / ratio); }
        }
        if (choice !== "free") { widthInput.value = w; heightInput.value = h; }
        var x = Math.round((w - bw) * Number(across.value) / 100);
        var y = Math.round((h - bh) * Number(down.value) / 100);
        var enlarged = w > bw || h > bh;
        layout = enlarged ? {w: w, h: h, x: x, y: y, bw: bw, bh: bh} : null;
        shown.textContent = w + " × " + h + (enlarged ? " (enlarged)" : "");
        editor.setAttribute("data-canvas", w + "x" + h);
        if (enlarged) {
          var board = document.createElement("canvas");
          board.width = w; board.height = h;
          board.getContext("2d").drawImage(picture, x, y);
          composed = board.toDataURL("image/png");
        } else {
          composed = "";
        }
        imageInput.value = composed;
        img.src = composed || original;
        editor.classList.toggle("enlarged", enlarged);
        if (submit) submit.disabled = !(drawn || enlarged);
      };
      img.addEventListener("load", function () {
        // A new canvas size starts a new mask: strokes on the old one would land elsewhere.
        if (canvas.width !== img.naturalWidth || canvas.height !== img.naturalHeight) {
          size();
          drawn = false;
          editor.removeAttribute("data-drawn");
          if (submit) submit.disabled = !layout;
        }
      });
      [aspect, widthInput, heightInput, across, down].forEach(function (control) {
        control.addEventListener("input", compose);
        control.addEventListener("change", compose);
      });
      picture.addEventListener("load", compose);
      picture.src = original;
    }

    function exportMask() {
      var out = document.createElement("canvas");
      out.width = canvas.width;
      out.height = canvas.height;
      var ctx = out.getContext("2d");
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, out.width, out.height);
      if (layout) {
        // Everything the picture does not cover is to be filled.
        ctx.fillStyle = "#fff";
        ctx.fillRect(0, 0, out.width, out.height);
        ctx.fillStyle = "#000";
        ctx.fillRect(layout.x, layout.y, layout.bw, layout.bh);
      }
      ctx.drawImage(canvas, 0, 0);
      return out.toDataURL("image/png");
    }
    form.addEventListener("submit", function (event) {
      if (!drawn && !layout) { event.preventDefault(); event.stopImmediatePropagation(); return; }
      output.value = exportMask();
    }, true);
    // Whichever of htmx and the listener above sees the submit first, the request has the mask
    // (and the enlarged canvas).
    form.addEventListener("htmx:configRequest", function (event) {
      if (drawn || layout) event.detail.parameters.mask = exportMask();
      if (layout) event.detail.parameters.image = composed;
    });
  }

  // A table wider than its box scrolls inside it: keyboard users must be able to reach it.
  function scrollableTables(root) {
    within(root, ".table-wrap").forEach(function (wrap) {
      if (wrap.scrollWidth > wrap.clientWidth + 1) {
        wrap.setAttribute("tabindex", "0");
        wrap.setAttribute("role", "region");
        if (!wrap.hasAttribute("aria-label")) {
          var section = wrap.closest("section");
          var heading = section ? $("h2, h3", section) : null;
          wrap.setAttribute("aria-label", heading ? heading.textContent.trim() : "Table");
        }
      }
    });
  }
  window.addEventListener("resize", function () { scrollableTables(document); });

  function init(root) {
    scrollableTables(root);
    within(root, "form[data-create-form]").forEach(syncCreateForm);
    within(root, "[data-mask-editor]").forEach(initMaskEditor);
    openDialogs(root);
    // A sticky one (a page out of date) waits for the user to reload.
    within(root, "#toasts .alert:not([data-sticky]), .alert[data-toast]").forEach(function (toast) {
      setTimeout(function () { toast.remove(); }, 6000);
    });
  }

  if (window.htmx) {
    window.htmx.onLoad(function (el) { init(el); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  }
})();
