\set c random(1, 50000 * :scale)
SELECT id, name FROM customers WHERE lower(email) = lower('user' || :c || '@mail.example');
