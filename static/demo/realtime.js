// Real-time recommendation demo.
//
// The recommendation panel is drawn ONLY from Socket.IO messages (`registered` after choosing a
// user, `realtime_recommendation` after every interaction). The HTTP answers to the clicks are
// checked for errors and otherwise ignored, so a changing panel proves the push works.

const PAGE_SIZE = 24;
const TOAST_MS = 5000;
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

const state = {
  socket: null,
  userId: null,
  category: null,
  names: new Map(),   // item_id -> Promise<name>: the client-side cache of GET /items/<id>
  clicks: new Map(),  // "event_type:item_id" -> performance.now() when the click sent its request
  shownItems: [],     // item ids currently in the panel, to mark newcomers
  renderSeq: 0,       // a slow render (name look-ups) never overwrites a newer push
  toastTimer: 0,
};

// ---- small helpers ---------------------------------------------------------------------------

function byTestId(testId) {
  return document.querySelector(`[data-testid="${testId}"]`);
}

function fromTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function showToast(text) {
  const toast = byTestId("toast");
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(state.toastTimer);
  state.toastTimer = setTimeout(() => { toast.hidden = true; }, TOAST_MS);
}

/** GET `path`, or POST `body` as JSON; resolve to the JSON answer, reject with "<error>: <message>". */
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${answer.error ?? response.status}: ${answer.message ?? response.statusText}`);
  }
  return answer;
}

function itemName(itemId) {
  if (!state.names.has(itemId)) {
    const lookup = api(`/items/${encodeURIComponent(itemId)}`)
      .then((item) => item.name)
      .catch((error) => {
        state.names.delete(itemId);
        showToast(error.message);
        return itemId;
      });
    state.names.set(itemId, lookup);
  }
  return state.names.get(itemId);
}

// ---- connection and users --------------------------------------------------------------------

function setConnection(status, text) {
  byTestId("connection-dot").dataset.state = status;
  byTestId("connection-text").textContent = text;
}

function register() {
  if (state.userId && state.socket.connected) {
    state.socket.emit("register_user", { user_id: state.userId });
  }
}

function selectUser(userId) {
  if (!userId || userId === state.userId) return;
  if (state.userId && state.socket.connected) {
    state.socket.emit("unregister_user", { user_id: state.userId });
  }
  state.userId = userId;
  state.clicks.clear();
  state.shownItems = [];
  state.renderSeq += 1;  // drop a render still running for the previous user
  for (const button of document.querySelectorAll("[data-user]")) {
    button.setAttribute("aria-pressed", String(button.dataset.user === userId));
  }
  byTestId("rec-user").textContent = userId;
  byTestId("rec-list").replaceChildren();
  byTestId("last-push").textContent = `Registering ${userId}…`;
  register();
}

function connect() {
  state.socket = io();
  state.socket.on("connect", () => {
    setConnection("connected", "connected");
    register();  // also after a reconnect: the server forgot the rooms of the old connection
  });
  state.socket.on("disconnect", () => setConnection("disconnected", "disconnected"));
  state.socket.on("connect_error", () => setConnection("disconnected", "cannot reach the server"));
  state.socket.on("registered", onRegistered);
  state.socket.on("realtime_recommendation", onPush);
  state.socket.on("error", (payload) => showToast(`${payload.error}: ${payload.message}`));
}

// ---- the recommendation panel ----------------------------------------------------------------

function onRegistered(payload) {
  if (payload.user_id !== state.userId) return;
  byTestId("last-push").textContent =
    `Registered: ${payload.recommendations.length} recommendations pushed. Click a product to change them.`;
  showRecommendations(payload.recommendations);
}

async function onPush(payload) {
  if (payload.user_id !== state.userId) return;
  const { item_id: itemId, event_type: eventType } = payload.trigger;
  const key = `${eventType}:${itemId}`;
  const sentAt = state.clicks.get(key);
  state.clicks.delete(key);
  const when = sentAt === undefined
    ? "from another session"
    : `${(performance.now() - sentAt).toFixed(1)} ms after your click`;
  const [name, drawn] = await Promise.all([itemName(itemId), showRecommendations(payload.recommendations)]);
  if (drawn) byTestId("last-push").textContent = `last push: ${when}, trigger: ${eventType} on ${name}`;
}

/** Draw the pushed list once its names are known; false if a newer push or user came first. */
async function showRecommendations(recommendations) {
  const seq = ++state.renderSeq;
  const names = await Promise.all(recommendations.map((rec) => itemName(rec.item)));
  if (seq !== state.renderSeq) return false;
  const list = byTestId("rec-list");
  list.replaceChildren(...recommendations.map((rec, i) => recItem(rec, names[i])));
  list.dataset.user = state.userId;
  state.shownItems = recommendations.map((rec) => rec.item);
  flash(byTestId("rec-panel"));
  return true;
}

function recItem(rec, name) {
  const li = fromTemplate("rec-item");
  li.dataset.itemId = rec.item;
  li.dataset.testid = "rec-item";
  li.classList.toggle("is-new", state.shownItems.length > 0 && !state.shownItems.includes(rec.item));
  li.querySelector(".rec-name").textContent = name;
  li.querySelector(".rec-name").title = rec.item;
  li.querySelector(".rec-score").textContent = rec.score.toFixed(3);
  li.querySelector(".rec-strategy").textContent = rec.strategy;
  return li;
}

function flash(element) {
  element.classList.remove("flash");
  void element.offsetWidth;  // restart the CSS animation
  element.classList.add("flash");
}

// ---- catalog ---------------------------------------------------------------------------------

async function loadCategories() {
  const { categories } = await api("/categories");
  const bar = byTestId("category-bar");
  bar.replaceChildren(...categories.map(categoryButton));
  if (categories.length > 0) await selectCategory(categories[0].name);
}

function categoryButton(category) {
  const button = fromTemplate("category-button");
  button.dataset.category = category.name;
  button.dataset.testid = `category-${category.name}`;
  button.querySelector(".name").textContent = category.name;
  button.querySelector(".count").textContent = category.count;
  return button;
}

async function selectCategory(name) {
  state.category = name;
  for (const button of byTestId("category-bar").children) {
    button.setAttribute("aria-pressed", String(button.dataset.category === name));
  }
  const query = new URLSearchParams({ category: name, limit: PAGE_SIZE });
  const { items, total } = await api(`/items?${query}`);
  if (name !== state.category) return;  // another category was chosen meanwhile
  byTestId("product-grid").replaceChildren(...items.map(productCard));
  byTestId("catalog-summary").textContent = `Showing ${items.length} of ${total} ${name} items`;
}

function productCard(item) {
  state.names.set(item.item_id, Promise.resolve(item.name));
  const card = fromTemplate("product-card");
  card.dataset.testid = `product-${item.item_id}`;
  card.dataset.itemId = item.item_id;
  card.querySelector(".product-name").textContent = item.name;
  card.querySelector(".brand").textContent = item.brand ?? "";
  card.querySelector(".price").textContent = item.price == null ? "" : money.format(item.price);
  const testIds = { view: "view", add_to_cart: "cart", purchase: "buy", rating: "rate" };
  for (const control of card.querySelectorAll("[data-action]")) {
    control.dataset.itemId = item.item_id;
    control.dataset.testid = `${testIds[control.dataset.action]}-${item.item_id}`;
  }
  return card;
}

// ---- actions ---------------------------------------------------------------------------------

/** Record a click; its effect on the panel arrives as a push, never from this HTTP answer. */
async function sendAction(itemId, eventType, rating) {
  if (!state.userId) {
    showToast("Pick a user first.");
    return;
  }
  const key = `${eventType}:${itemId}`;
  state.clicks.set(key, performance.now());
  const request = eventType === "rating"
    ? api("/interactions", { user_id: state.userId, item_id: itemId, rating })
    : api("/event", { user_id: state.userId, product_id: itemId, event_type: eventType });
  const recorded = request.then(() => true, (error) => {
    state.clicks.delete(key);
    showToast(error.message);
    return false;
  });
  const name = await itemName(itemId);
  const lastPush = byTestId("last-push");
  if (state.clicks.has(key)) {  // neither the push nor an error came first
    lastPush.textContent = `Sent ${eventType} on ${name}, waiting for the push…`;
  }
  if (!(await recorded)) {
    lastPush.textContent = `${eventType} on ${name} was not recorded.`;
  }
}

function bindControls() {
  for (const button of document.querySelectorAll("[data-user]")) {
    button.addEventListener("click", () => selectUser(button.dataset.user));
  }
  byTestId("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    selectUser(event.target.elements.user_id.value.trim());
  });
  byTestId("category-bar").addEventListener("click", (event) => {
    const button = event.target.closest("[data-category]");
    if (button) selectCategory(button.dataset.category).catch((error) => showToast(error.message));
  });
  const grid = byTestId("product-grid");
  grid.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) sendAction(button.dataset.itemId, button.dataset.action);
  });
  grid.addEventListener("change", (event) => {
    const select = event.target;
    if (select.dataset.action !== "rating" || !select.value) return;
    sendAction(select.dataset.itemId, "rating", Number(select.value));
    select.value = "";
  });
}

function start() {
  bindControls();
  if (typeof io !== "function") {
    setConnection("disconnected", "no Socket.IO client");
    showToast("The Socket.IO client is missing: run npm install on the server.");
  } else {
    connect();
  }
  loadCategories().catch((error) => showToast(error.message));
}

start();
